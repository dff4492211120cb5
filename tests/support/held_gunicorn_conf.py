"""gunicorn settings of `modelserver serve` (modelserver.gunicorn_conf, its hooks included),
serving the app with a model the test holds (serving.held_gunicorn_app). Used by
serving.start_held_server: `-c python:held_gunicorn_conf`, with tests/support on PYTHONPATH."""

from modelserver.gunicorn_conf import *  # noqa: F403

wsgi_app = "serving:held_gunicorn_app()"
