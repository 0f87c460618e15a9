// Processes, ports, waiting and the notify socket live in LocalPeers, which the
// benchmarks use too; every test that imports TestSupport gets them as before.
@_exported import LocalPeers
