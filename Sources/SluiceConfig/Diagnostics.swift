// Config problems are collected, never thrown one at a time: an operator fixing a config wants
// every mistake in one pass, each pointing at file:line:column and the key path.

public struct ConfigDiagnostic: Sendable, Equatable, CustomStringConvertible, Error {
    public var file: String
    public var line: Int
    public var column: Int
    /// Dotted path with indices, e.g. `listeners[0].routes[2].cluster`.
    public var keyPath: String
    public var message: String
    public var severity: Severity

    /// `error`: the config is wrong. `unsupported`: valid (Envoy would run it) but it asks for
    /// something Sluice does not implement, so running it would behave differently.
    public enum Severity: String, Sendable {
        case error, unsupported
    }

    public init(file: String, line: Int, column: Int, keyPath: String, message: String, severity: Severity = .error) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
        self.severity = severity
    }

    public var description: String {
        let where_ = keyPath.isEmpty ? "" : "\(keyPath): "
        return "\(file):\(line):\(column): \(severity.rawValue): \(where_)\(message)"
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var diagnostics: [ConfigDiagnostic]
    public init(_ diagnostics: [ConfigDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
