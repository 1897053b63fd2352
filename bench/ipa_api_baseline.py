#!/usr/bin/env python3
"""Baseline: IPA's own API application (from PyPI), started alone on 127.0.0.1:PORT.

It imports ironic_python_agent.agent first (the real agent's import cost), then serves
ironic_python_agent.api.app.Application with a minimal agent object that only answers
get_status. No hardware managers, no lookup, nothing touches the machine.
usage: ipa_api_baseline.py PORT
"""
import signal
import sys
import time
from collections import namedtuple

from oslo_config import cfg
from ironic_python_agent import agent  # noqa: F401  (import cost of the real agent)
from ironic_python_agent.api import app

PORT = int(sys.argv[1])
cfg.CONF(args=[], project="ira-bench", default_config_files=[])


class MinimalAgent:
    listen_address = namedtuple("Address", "hostname port")("127.0.0.1", PORT)
    started_at = time.time()

    def get_status(self):
        return {"started_at": self.started_at, "version": "ipa"}


application = app.Application(MinimalAgent(), cfg.CONF)
application.start()
signal.signal(signal.SIGTERM, lambda *_: (application.stop(), sys.exit(0)))
while True:
    time.sleep(3600)
