"""No fixtures of the app's own: its tests' helpers are in tests/tui/helpers.py.

tests/tui/test_probes_view.py still imports `settle` from here; once it imports it from
tests.tui.helpers, this file can go."""

from tests.tui.helpers import settle as settle  # re-exported: the name test_probes_view.py imports
