"""The e2e fixtures (a clean broker, real workers), for the e2e tests of this directory."""
from tests.e2e.conftest import broker, e2e_key, start_worker, storage_dir, worker  # noqa: F401
