// GatewayIntegrationTests
