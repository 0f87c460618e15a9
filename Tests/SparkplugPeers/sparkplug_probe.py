#!/usr/bin/env python3
"""A Sparkplug B host-side probe for the integration tests: subscribes to spBv1.0/#
on a broker and writes one JSON line per message, decoded independently of the
gateway's Swift code, by one of three decoders:

  --decoder pysparkplug   pysparkplug (PyPI, in the venv `make deps` creates)
  --decoder protobuf      Google's protobuf runtime (Debian python3-protobuf) on the
                          sparkplug_b_pb2 module protoc compiles from proto/sparkplug_b.proto
                          (--pb2-dir), with the datatypes read as Sparkplug 3.0 §6.4.16
                          and Eclipse Tahu's Python core define them
  --decoder spbwrapper    mqtt-spb-wrapper (PyPI, in a venv of its own that `make deps`
                          creates: it pins an older protobuf): its SpbPayloadParser, on the
                          sparkplug_b_pb2 of Eclipse Tahu's Python core that it ships

Aliases are resolved from the births each decoder saw. The line format is:
{"decoder","topic","qos","retain","seq","timestamp","metrics":[{"name","alias","datatype",
 "value","is_null","is_historical","timestamp","properties"}]}
Writes one line {"ready": true} once subscribed; runs until killed.
"""
import argparse
import json
import sys
import threading

import paho.mqtt.client as mqtt

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--decoder", choices=["pysparkplug", "protobuf", "spbwrapper"], required=True)
parser.add_argument("--pb2-dir")
parser.add_argument("--out", required=True)
args = parser.parse_args()

out = open(args.out, "a", buffering=1)
lock = threading.Lock()


def emit(obj):
    with lock:
        out.write(json.dumps(obj) + "\n")


# --- decoder 1: pysparkplug -------------------------------------------------------
def pysparkplug_decoder():
    import pysparkplug as psp

    births = {}  # (node) -> NBirth, (node, device) -> DBirth

    def metric_json(m):
        value = m.value
        if isinstance(value, bytes):
            value = value.hex()
        return {"name": m.name, "alias": m.alias, "datatype": int(m.datatype), "value": value,
                "is_null": m.is_null, "is_historical": m.is_historical, "timestamp": m.timestamp,
                "properties": None}

    def decode(topic, raw):
        parts = topic.split("/")
        if parts[1] == "STATE":
            return None
        verb, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        key = (node, device)
        if verb == "NBIRTH":
            payload = psp.NBirth.decode(raw)
            births[key] = payload
        elif verb == "DBIRTH":
            payload = psp.DBirth.decode(raw)
            births[key] = payload
        elif verb == "NDEATH":
            payload = psp.NDeath.decode(raw)
            return {"seq": None, "timestamp": payload.timestamp,
                    "metrics": [{"name": "bdSeq", "alias": None, "datatype": 4, "value": payload.bd_seq_metric.value,
                                 "is_null": False, "is_historical": False, "timestamp": payload.bd_seq_metric.timestamp,
                                 "properties": None}]}
        elif verb == "DDEATH":
            payload = psp.DDeath.decode(raw)
            return {"seq": payload.seq, "timestamp": payload.timestamp, "metrics": []}
        elif verb == "NDATA":
            payload = psp.NData.decode(raw, birth=births.get(key))
        elif verb == "DDATA":
            payload = psp.DData.decode(raw, birth=births.get(key))
        elif verb == "NCMD":
            payload = psp.NCmd.decode(raw)
        elif verb == "DCMD":
            payload = psp.DCmd.decode(raw)
        else:
            return None
        return {"seq": getattr(payload, "seq", None), "timestamp": payload.timestamp,
                "metrics": [metric_json(m) for m in payload.metrics]}

    return decode


# --- decoder 2: Google protobuf on the protoc-compiled schema ---------------------
def protobuf_decoder():
    sys.path.insert(0, args.pb2_dir)
    import sparkplug_b_pb2 as pb

    names = {}  # (node, device or None) -> {alias: (name, datatype)}
    signed_bits = {1: 8, 2: 16, 3: 32, 4: 64}

    def value_of(m, datatype):
        field = m.WhichOneof("value")
        if field is None:
            return None
        raw = getattr(m, field)
        if datatype in signed_bits:  # two's complement at the type's width
            bits = signed_bits[datatype]
            if raw >= 2 ** (bits - 1):
                raw -= 2 ** bits
        return raw

    def property_json(ps):
        result = {}
        for key, v in zip(ps.keys, ps.values):
            field = v.WhichOneof("value")
            result[key] = {"type": v.type, "value": getattr(v, field) if field else None}
        return result

    def decode(topic, raw):
        parts = topic.split("/")
        if parts[1] == "STATE":
            return None
        verb, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        payload = pb.Payload()
        payload.ParseFromString(raw)
        key = (node, device)
        if verb in ("NBIRTH", "DBIRTH"):
            names[key] = {m.alias: (m.name, m.datatype) for m in payload.metrics if m.HasField("alias")}
        metrics = []
        for m in payload.metrics:
            name = m.name if m.HasField("name") else None
            datatype = m.datatype if m.HasField("datatype") else None
            if m.HasField("alias") and key in names and m.alias in names[key]:
                known_name, known_type = names[key][m.alias]
                name = name or known_name
                datatype = datatype or known_type
            metrics.append({"name": name, "alias": m.alias if m.HasField("alias") else None, "datatype": datatype,
                            "value": value_of(m, datatype), "is_null": m.is_null, "is_historical": m.is_historical,
                            "timestamp": m.timestamp if m.HasField("timestamp") else None,
                            "properties": property_json(m.properties) if m.HasField("properties") else None,
                            "named_on_wire": m.HasField("name")})
        return {"seq": payload.seq if payload.HasField("seq") else None,
                "timestamp": payload.timestamp if payload.HasField("timestamp") else None, "metrics": metrics}

    return decode


# --- decoder 3: mqtt-spb-wrapper's payload parser ---------------------------------
def spbwrapper_decoder():
    from mqtt_spb_wrapper import SpbPayloadParser

    names = {}  # (node, device or None) -> {alias: (name, datatype)}

    def as_int(value):  # MessageToDict writes 64-bit integers as strings
        return int(value) if value is not None else None

    def properties_json(metric):
        properties = metric.get("properties")
        if properties is None:
            return None
        decoded = properties.get("key_value", {})
        types = [v.get("type") for v in properties.get("values", [])]
        return {key: {"type": types[index] if index < len(types) else None, "value": decoded.get(key)}
                for index, key in enumerate(properties.get("keys", []))}

    def decode(topic, raw):
        parts = topic.split("/")
        if parts[1] == "STATE":
            return None
        verb, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        payload = SpbPayloadParser(raw).payload
        if not isinstance(payload, dict):
            raise ValueError("mqtt-spb-wrapper could not parse the payload")
        key = (node, device)
        metrics = payload.get("metrics", [])
        if verb in ("NBIRTH", "DBIRTH"):
            names[key] = {int(m["alias"]): (m.get("name"), m.get("datatype")) for m in metrics if "alias" in m}
        result = []
        for m in metrics:
            alias = int(m["alias"]) if "alias" in m else None
            name, datatype = m.get("name"), m.get("datatype")
            if alias is not None and alias in names.get(key, {}):
                known_name, known_type = names[key][alias]
                name = name or known_name
                datatype = datatype or known_type
            result.append({"name": name, "alias": alias, "datatype": datatype, "value": m.get("value"),
                           "is_null": m.get("isNull", False), "is_historical": m.get("isHistorical", False),
                           "timestamp": as_int(m.get("timestamp")), "properties": properties_json(m),
                           "named_on_wire": "name" in m})
        return {"seq": as_int(payload.get("seq")), "timestamp": as_int(payload.get("timestamp")), "metrics": result}

    return decode


decode = {"pysparkplug": pysparkplug_decoder, "protobuf": protobuf_decoder,
          "spbwrapper": spbwrapper_decoder}[args.decoder]()


def on_connect(client, userdata, flags, rc):
    client.subscribe("spBv1.0/#", qos=1)


def on_subscribe(client, userdata, mid, granted):
    emit({"ready": True})


def on_message(client, userdata, message):
    line = {"decoder": args.decoder, "topic": message.topic, "qos": message.qos, "retain": bool(message.retain)}
    try:
        decoded = decode(message.topic, message.payload)
        if decoded is None:
            return
        line.update(decoded)
    except Exception as error:  # a message the decoder rejects is a finding, not a crash
        line["error"] = f"{type(error).__name__}: {error}"
    emit(line)


client = mqtt.Client(client_id=f"probe-{args.decoder}", clean_session=True)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect("127.0.0.1", args.port, keepalive=30)
client.loop_start()

threading.Event().wait()  # until the test kills the probe
