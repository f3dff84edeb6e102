import ProxyWasm
import SluiceConfig

// Metadata and the node as the configuration holds them, converted once per configuration
// into the values the Proxy-Wasm host encodes for filters (the two modules do not know each
// other).

extension StructValue {
    init(_ value: MetadataValue) {
        switch value {
        case .null: self = .null
        case .number(let v): self = .number(v)
        case .string(let s): self = .string(s)
        case .bool(let b): self = .bool(b)
        case .structure(let fields): self = .structure(fields.mapValues(StructValue.init))
        case .list(let values): self = .list(values.map(StructValue.init))
        }
    }
}

extension Metadata {
    init(_ config: MetadataConfig) {
        self.init(filterMetadata: config.mapValues { $0.mapValues(StructValue.init) })
    }
}

extension NodeInfo {
    init(_ config: NodeConfig) {
        self.init(id: config.id, cluster: config.cluster, metadata: config.metadata.mapValues(StructValue.init))
    }
}
