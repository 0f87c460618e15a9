// libmosquitto client library (MQTT 3.1.1 / 5). Its TLS is OpenSSL; what the
// uplink reads from OpenSSL itself comes through COpenSSL.
#include <mosquitto.h>
#include <mqtt_protocol.h>
// The uplink's network thread waits on its socket and an eventfd (UplinkExecutor.swift).
#include <sys/eventfd.h>
#include <poll.h>
