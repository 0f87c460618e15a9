#!/usr/bin/env python3
"""A minimal MQTT 5 server that announces a Receive Maximum and withholds PUBACK, to
show on the wire how many QoS 1/2 publishes a client keeps unacknowledged.

No MQTT broker reports that number: mosquitto acknowledges at once. This peer
speaks only what the check needs (CONNECT, CONNACK with Receive Maximum,
PUBLISH, PUBACK, PINGREQ/PINGRESP), on 127.0.0.1:<port>, for one connection:

1. answers CONNECT with CONNACK (Receive Maximum = <receive_maximum>, Server Keep
   Alive = <server_keepalive> seconds), acknowledges
   nothing, and counts QoS > 0 publishes until the client's first PINGREQ (the client
   sends it after a keepalive, the server's if it honours it, with nothing else to
   send): prints "window <n>";
2. acknowledges the first of them and counts again until the next PINGREQ:
   prints "after_one_puback <n>", then exits.

Usage: receive_maximum_server.py <port> <receive_maximum> <server_keepalive>
"""
import socket
import sys


def read_exactly(conn, count):
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError("the client closed the connection")
        data += chunk
    return data


def read_packet(conn):
    first = read_exactly(conn, 1)[0]
    length, shift = 0, 0
    while True:
        byte = read_exactly(conn, 1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80 == 0:
            break
    return first, read_exactly(conn, length)


def publish_id(first, body):
    """The packet id of a QoS > 0 PUBLISH, None for QoS 0."""
    qos = (first >> 1) & 0x3
    if qos == 0:
        return None
    topic_length = int.from_bytes(body[0:2], "big")
    return int.from_bytes(body[2 + topic_length:4 + topic_length], "big")


def count_until_pingreq(conn):
    ids = []
    while True:
        first, body = read_packet(conn)
        kind = first >> 4
        if kind == 3:
            packet_id = publish_id(first, body)
            if packet_id is not None:
                ids.append(packet_id)
        elif kind == 12:
            conn.sendall(bytes([0xD0, 0x00]))  # PINGRESP
            return ids


def main():
    port, receive_maximum, server_keepalive = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    print("listening", flush=True)
    conn, _ = listener.accept()
    first, _ = read_packet(conn)
    if first >> 4 != 1:
        sys.exit("expected CONNECT, got packet type %d" % (first >> 4))
    # CONNACK: no session present, success, properties: Receive Maximum (0x21) and
    # Server Keep Alive (0x13).
    properties = (bytes([0x21]) + receive_maximum.to_bytes(2, "big")
                  + bytes([0x13]) + server_keepalive.to_bytes(2, "big"))
    variable = bytes([0x00, 0x00, len(properties)]) + properties
    conn.sendall(bytes([0x20, len(variable)]) + variable)
    window = count_until_pingreq(conn)
    print("window %d" % len(window), flush=True)
    conn.sendall(bytes([0x40, 0x02]) + window[0].to_bytes(2, "big"))  # PUBACK, success
    after = count_until_pingreq(conn)
    print("after_one_puback %d" % len(after), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
