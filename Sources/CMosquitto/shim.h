// libmosquitto client library (MQTT 3.1.1 / 5).
#include <mosquitto.h>
#include <mqtt_protocol.h>
