#!/usr/bin/env python3
"""Builds a Sparkplug B DCMD payload the way a host application would, independently
of the gateway's Swift code, with pysparkplug (PyPI, in the venv `make deps` creates).

    sparkplug_dcmd.py '[{"name": "setpoint", "datatype": "FLOAT", "value": 72.5},
                        {"alias": 12, "datatype": "BOOLEAN", "value": true}]'

Each metric names its tag by "name" or by "alias" (the DBIRTH's); "datatype" is a
pysparkplug DataType name and selects the value field (pysparkplug, like many hosts,
sends no datatype in a command: the DBIRTH's applies). Prints the payload as hex.
"""
import json
import sys

import pysparkplug as psp

metrics = []
for spec in json.loads(sys.argv[1]):
    metrics.append(psp.Metric(timestamp=psp.get_current_timestamp(), name=spec.get("name"),
                              alias=spec.get("alias"), datatype=psp.DataType[spec["datatype"]],
                              value=spec["value"]))
print(psp.DCmd(timestamp=psp.get_current_timestamp(), metrics=tuple(metrics)).encode().hex())
