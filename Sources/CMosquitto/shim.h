// libmosquitto client library (MQTT 3.1.1 / 5).
#include <mosquitto.h>
#include <mqtt_protocol.h>
// libmosquitto's TLS is OpenSSL: its error queue and the SSL handle's verify
// result (mosquitto_ssl_get) say which TLS check failed.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>
