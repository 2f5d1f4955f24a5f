def pytest_configure(config):
    # Registered here so that --strict-markers accepts it without touching pytest.ini.
    config.addinivalue_line(
        "markers", "install: builds a venv from requirements-runtime.txt alone (or the package) and runs web + worker from it"
    )
