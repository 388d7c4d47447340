"""Our SMART app, launched from an external EHR (`/app/launch`): see views.py."""

from fhir_server.app_launch.views import create_app_blueprint

__all__ = ["create_app_blueprint"]
