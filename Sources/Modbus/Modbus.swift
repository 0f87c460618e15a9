// Modbus: sources arrive with the walking-skeleton work.
