"""Studio: the whole road (data → train → proof → chat → export) in a local web app.

    from specialist.studio.app import create_app, StudioSettings
    app = create_app(StudioSettings(runs=Path("runs")))   # a FastAPI app; `specialist studio` serves it

Pages call the same library functions as the CLI; long work runs as the CLI itself in a
child process (jobs.py), so the studio has no training, evaluation or export logic of its own."""
