// Config problems are collected, never thrown one at a time: an operator fixing a config wants
// every mistake in one pass, each pointing at file:line:column and the key path.

public struct ConfigDiagnostic: Sendable, Equatable, CustomStringConvertible, Error {
    public var file: String
    public var line: Int
    public var column: Int
    /// Dotted path with indices, e.g. `listeners[0].routes[2].cluster`.
    public var keyPath: String
    public var message: String

    public init(file: String, line: Int, column: Int, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        let where_ = keyPath.isEmpty ? "" : "\(keyPath): "
        return "\(file):\(line):\(column): error: \(where_)\(message)"
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var diagnostics: [ConfigDiagnostic]
    public init(_ diagnostics: [ConfigDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
