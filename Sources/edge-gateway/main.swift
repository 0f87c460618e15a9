print("edge-gateway: not built yet")
