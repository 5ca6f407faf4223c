"""Moved to ``serving.launch``: ``python -m teachers.serve`` still runs it (with a notice) so existing scripts keep working."""

if __name__ == "__main__":
    import runpy
    import sys

    print("note: python -m teachers.serve is now python -m serving.launch", file=sys.stderr)
    runpy.run_module("serving.launch", run_name="__main__", alter_sys=True)
