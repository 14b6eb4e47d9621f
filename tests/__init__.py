"""The test suite as a package, so that a test module imports the shared helpers by their full name
(`from tests.helpers import run_cli`) however pytest is started: `python -m pytest`, plain `pytest`
(pytest puts the folder above this one, the repository's root, on sys.path) or with `-n 2`."""
