// The one helper the configuration tests use to read why a configuration is refused.
import GatewayConfig
import Testing

/// The problems `yaml` is rejected with; records an issue if it loads or fails otherwise.
func rejectedProblems(_ yaml: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigProblem] {
    do {
        _ = try ConfigurationLoader.parse(yaml: yaml)
        Issue.record("expected the configuration to be rejected", sourceLocation: sourceLocation)
    } catch let error as ConfigurationError {
        return error.problems
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return []
}
