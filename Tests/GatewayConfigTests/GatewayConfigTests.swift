// GatewayConfigTests
