// libmodbus, found through pkg-config (its include path ends in /modbus).
#include <modbus.h>
