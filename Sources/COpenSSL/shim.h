// OpenSSL. libcrypto: AEAD (AES-256-GCM), HMAC and the CSPRNG for payload sealing.
// libssl and X.509: the uplink's TLS diagnosis (libmosquitto's TLS is OpenSSL; its
// error queue, the verify result and a probe handshake say which check failed).
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
// PEM certificates and keys of mqtt.tls, checked when gateway.yaml is loaded.
#include <openssl/pem.h>
#include <openssl/x509.h>
