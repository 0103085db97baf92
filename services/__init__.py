"""The service layer: each use case of the DXA monitor written once, owning its transaction.

Celery tasks (`workers`), the embedded runner and the command line (`dxa`) and the web routes
(`web`) only translate their input, call a use case here with one `services.context.Context`,
and translate the outcome. See docs/architecture.md.
"""
