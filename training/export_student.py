"""Moved to ``evaluation.export_student``: ``python -m training.export_student`` still runs it (with a notice) so existing scripts keep working."""

if __name__ == "__main__":
    import runpy
    import sys

    print("note: python -m training.export_student is now python -m evaluation.export_student", file=sys.stderr)
    runpy.run_module("evaluation.export_student", run_name="__main__", alter_sys=True)
