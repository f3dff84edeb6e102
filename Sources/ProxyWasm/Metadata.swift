/// A `google.protobuf.Value`: what Envoy's metadata and node metadata hold.
public indirect enum StructValue: Sendable, Equatable {
    case null
    case number(Double)
    case string(String)
    case bool(Bool)
    case structure([String: StructValue])
    case list([StructValue])

    /// As Envoy hands a leaf to a filter: strings raw, numbers as an 8-byte little-endian
    /// double, booleans as one byte; a struct as "pairs" of its fields (each value encoded
    /// the same way), a list as the protobuf of a ListValue.
    var propertyBytes: [UInt8] {
        switch self {
        case .null: return []
        case .number(let v): return withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) }
        case .string(let s): return Array(s.utf8)
        case .bool(let b): return [b ? 1 : 0]
        case .structure(let fields): return Pairs.serialize(bytes: fields.sorted { $0.key < $1.key }.map { (Array($0.key.utf8), $0.value.propertyBytes) })
        case .list(let values):
            var out = ProtobufWriter()
            for v in values { out.message(1, v.protobuf) }
            return out.bytes
        }
    }

    /// google.protobuf.Value in protobuf's binary form.
    var protobuf: [UInt8] {
        var out = ProtobufWriter()
        switch self {
        case .null: out.varint(1, 0)
        case .number(let v): out.double(2, v)
        case .string(let s): out.bytes(3, Array(s.utf8))
        case .bool(let b): out.varint(4, b ? 1 : 0)
        case .structure(let fields): out.message(5, StructValue.structProtobuf(fields))
        case .list(let values):
            var list = ProtobufWriter()
            for v in values { list.message(1, v.protobuf) }
            out.message(6, list.bytes)
        }
        return out.bytes
    }

    /// google.protobuf.Struct: map entries in key order (as Envoy serialises them).
    static func structProtobuf(_ fields: [String: StructValue]) -> [UInt8] {
        var out = ProtobufWriter()
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) { out.mapEntry(1, key: key, value: value.protobuf) }
        return out.bytes
    }

    /// The value at `path` inside this one (struct fields by name).
    func lookup(_ path: ArraySlice<String>) -> StructValue? {
        guard let first = path.first else { return self }
        guard case .structure(let fields) = self, let next = fields[first] else { return nil }
        return next.lookup(path.dropFirst())
    }
}

/// Envoy's `config.core.v3.Metadata`: filter_metadata, namespace → struct.
public struct Metadata: Sendable, Equatable {
    public var filterMetadata: [String: [String: StructValue]]
    public init(filterMetadata: [String: [String: StructValue]] = [:]) { self.filterMetadata = filterMetadata }

    var protobuf: [UInt8] {
        var out = ProtobufWriter()
        for (namespace, fields) in filterMetadata.sorted(by: { $0.key < $1.key }) {
            out.mapEntry(1, key: namespace, value: StructValue.structProtobuf(fields))
        }
        return out.bytes
    }

    /// A property path below `xds.*_metadata`: nothing (the message), or
    /// `filter_metadata`, a namespace, and fields.
    func property(_ path: ArraySlice<String>) -> [UInt8]? {
        guard let first = path.first else { return protobuf }
        guard first == "filter_metadata", path.count >= 2, let fields = filterMetadata[path[path.startIndex + 1]] else { return nil }
        return StructValue.structure(fields).lookup(path.dropFirst(2))?.propertyBytes
    }
}

/// Envoy's `config.core.v3.Node`, the fields a bootstrap sets.
public struct NodeInfo: Sendable, Equatable {
    public var id: String
    public var cluster: String
    public var metadata: [String: StructValue]
    public init(id: String = "", cluster: String = "", metadata: [String: StructValue] = [:]) {
        self.id = id
        self.cluster = cluster
        self.metadata = metadata
    }

    func property(_ path: ArraySlice<String>) -> [UInt8]? {
        guard let first = path.first else {
            var out = ProtobufWriter()
            if !id.isEmpty { out.bytes(1, Array(id.utf8)) }
            if !cluster.isEmpty { out.bytes(2, Array(cluster.utf8)) }
            if !metadata.isEmpty { out.message(3, StructValue.structProtobuf(metadata)) }
            return out.bytes
        }
        switch first {
        case "id": return path.count == 1 ? Array(id.utf8) : nil
        case "cluster": return path.count == 1 ? Array(cluster.utf8) : nil
        case "metadata": return StructValue.structure(metadata).lookup(path.dropFirst())?.propertyBytes
        default: return nil
        }
    }
}

/// Just enough of protobuf's binary encoding for Struct, Value, Metadata and Node.
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    private mutating func raw(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(_ field: UInt64, _ value: UInt64) {
        raw(field << 3)
        raw(value)
    }

    mutating func double(_ field: UInt64, _ value: Double) {
        raw(field << 3 | 1)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func bytes(_ field: UInt64, _ value: [UInt8]) {
        raw(field << 3 | 2)
        raw(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func message(_ field: UInt64, _ value: [UInt8]) { bytes(field, value) }

    /// One entry of a `map<string, Message>` field: a message of key (1) and value (2).
    mutating func mapEntry(_ field: UInt64, key: String, value: [UInt8]) {
        var entry = ProtobufWriter()
        entry.bytes(1, Array(key.utf8))
        entry.message(2, value)
        message(field, entry.bytes)
    }
}
