// OpenSSL's libcrypto: AEAD (AES-256-GCM), HMAC and the CSPRNG for payload sealing.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/err.h>
#include <openssl/params.h>
// PEM certificates and keys of mqtt.tls, checked when gateway.yaml is loaded.
#include <openssl/pem.h>
#include <openssl/x509.h>
