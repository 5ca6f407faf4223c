"""Moved to ``serving.prepare_af3_think``: ``python -m teachers.prepare_af3_think`` still runs it (with a notice) so existing scripts keep working."""

if __name__ == "__main__":
    import runpy
    import sys

    print("note: python -m teachers.prepare_af3_think is now python -m serving.prepare_af3_think", file=sys.stderr)
    runpy.run_module("serving.prepare_af3_think", run_name="__main__", alter_sys=True)
