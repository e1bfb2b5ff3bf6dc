"""The studio's web UI (Gradio 6): `build_app(services)` and `launch_studio(services)` from `studio.ui.app`."""
