"""The harness itself: every simulator the suite drives is up and names itself."""

import conftest


def test_every_simulator_answers_its_control_api():
    for name in conftest.SIMULATORS:
        sim = conftest.simulator(name)
        sim.reset()
        assert sim.info(), name
        assert sim.requests() == [], name
