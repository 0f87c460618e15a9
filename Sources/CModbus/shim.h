// libmodbus, found through pkg-config (its include path ends in /modbus).
#include <modbus.h>

// libmodbus' error codes (EMBX…, EMB…) are macros adding an enum to MODBUS_ENOBASE,
// which Swift does not import; these functions return them as libmodbus defines them.

// The errno libmodbus sets for Modbus exception `exception` (1 = illegal function, …).
static inline int cmodbus_exception_errno(int exception) { return MODBUS_ENOBASE + exception; }
// The exception code an errno stands for, or 0 when it is no Modbus exception.
static inline int cmodbus_exception_of_errno(int code) {
    return code > MODBUS_ENOBASE && code < MODBUS_ENOBASE + MODBUS_EXCEPTION_MAX ? code - MODBUS_ENOBASE : 0;
}
// EMBBADCRC: an RTU frame whose CRC does not match.
static inline int cmodbus_errno_bad_crc(void) { return EMBBADCRC; }
// EMBBADDATA: an answer that does not fit the request (length, function, count).
static inline int cmodbus_errno_bad_data(void) { return EMBBADDATA; }
// EMBBADEXC: an exception answer of the wrong length or function.
static inline int cmodbus_errno_bad_exception(void) { return EMBBADEXC; }
// EMBUNKEXC: an exception code libmodbus does not know.
static inline int cmodbus_errno_unknown_exception(void) { return EMBUNKEXC; }
// EMBMDATA: more data than a request may carry.
static inline int cmodbus_errno_too_much_data(void) { return EMBMDATA; }
// EMBBADSLAVE: an RTU answer from another unit id.
static inline int cmodbus_errno_bad_slave(void) { return EMBBADSLAVE; }

// Register decoding's rounding of scaled values (RegisterDecoding.roundedToSignificantDigits).
#include <stdio.h>
#include <stdlib.h>

// `value` kept to 15 significant digits: printed with "%.15g" and read back, both
// correctly rounded by glibc. In C because Swift reaches a variadic printf only
// through withVaList, which boxes the argument and casts it at run time, per value.
// 0 when the text does not fit `size` (a finite double needs at most 23 bytes).
static inline int cmodbus_round_to_15_digits(double value, double *rounded) {
    char text[32];
    int written = snprintf(text, sizeof text, "%.15g", value);
    if (written <= 0 || written >= (int)sizeof text) return 0;
    *rounded = strtod(text, NULL);
    return 1;
}
