// OutboxTests
