"""The e2e fixtures (a clean broker, real workers, the production web process), for the e2e tests of this directory."""
from tests.e2e.conftest import broker, e2e_key, start_web, start_worker, storage_dir, worker  # noqa: F401
