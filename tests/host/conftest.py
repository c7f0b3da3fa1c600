"""Host-test fixtures: every virtual card created in a test is checked for violations afterwards.

A fare validator must never address an application other than T-Union nor read SFI 0x16; the
virtual card records any such command as a violation, and this fixture fails the test that caused
it. Tests that provoke violations on purpose (to test the detector itself) request
`allow_violations`.
"""

import pytest

from tools.sim import card as card_module


@pytest.fixture
def allow_violations():
    return True


@pytest.fixture(autouse=True)
def _no_card_violations(request, monkeypatch):
    created = []
    original = card_module.VirtualCard.__init__

    def tracking_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(card_module.VirtualCard, "__init__", tracking_init)
    yield created
    if "allow_violations" in request.fixturenames:
        return
    found = [(c.name, v) for c in created for v in c.violations]
    if found:
        pytest.fail("virtual card violations: %r" % found)
