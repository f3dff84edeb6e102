import NIOHTTP1

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1), plus any header a
/// `Connection` field names.
enum HopByHop {
    /// The fixed set, as bits so that a pass over the headers can note which are present.
    struct Fields: OptionSet {
        let rawValue: UInt8
        static let connection = Fields(rawValue: 1 << 0)
        static let keepAlive = Fields(rawValue: 1 << 1)
        static let proxyConnection = Fields(rawValue: 1 << 2)
        static let transferEncoding = Fields(rawValue: 1 << 3)
        static let te = Fields(rawValue: 1 << 4)
        static let trailer = Fields(rawValue: 1 << 5)
        static let upgrade = Fields(rawValue: 1 << 6)

        static let all: [(Fields, String)] = [
            (.connection, "connection"), (.keepAlive, "keep-alive"), (.proxyConnection, "proxy-connection"),
            (.transferEncoding, "transfer-encoding"), (.te, "te"), (.trailer, "trailer"), (.upgrade, "upgrade"),
        ]
    }

    /// Which hop-by-hop field `name` is, compared byte-wise without allocating (this runs for
    /// every header of every request and response).
    static func field(_ name: String) -> Fields? {
        switch name.utf8.count {
        case 2: return name.isASCIICaseInsensitive("te") ? .te : nil
        case 7:
            if name.isASCIICaseInsensitive("trailer") { return .trailer }
            return name.isASCIICaseInsensitive("upgrade") ? .upgrade : nil
        case 10:
            if name.isASCIICaseInsensitive("connection") { return .connection }
            return name.isASCIICaseInsensitive("keep-alive") ? .keepAlive : nil
        case 16: return name.isASCIICaseInsensitive("proxy-connection") ? .proxyConnection : nil
        case 17: return name.isASCIICaseInsensitive("transfer-encoding") ? .transferEncoding : nil
        default: return nil
        }
    }
}

/// Removes the hop-by-hop headers, and the headers `Connection` nominates (except those that
/// may not be nominated away: Host and the framing fields). `keepUpgrade` keeps the
/// Upgrade/Connection pair of an upgrade request.
func stripHopByHop(_ headers: inout HTTPHeaders, keepUpgrade: Bool = false) {
    // One pass to see what is present: most messages carry no hop-by-hop header but
    // `connection`, and removing by name costs a scan per name.
    var present: HopByHop.Fields = []
    var nominated: [String] = []
    for (name, value) in headers {
        guard let field = HopByHop.field(name) else { continue }
        present.insert(field)
        guard field == .connection else { continue }
        for token in value.utf8.split(separator: UInt8(ascii: ",")) {
            let option = Substring(token).trimmingOWS()
            if option.isEmpty { continue }
            if option.isASCIICaseInsensitive("close") || option.isASCIICaseInsensitive("keep-alive") { continue }
            if connectionNominationProtected.contains(option.lowercased()) { continue }
            nominated.append(option)
        }
    }
    if present.isEmpty { return }
    for name in nominated { headers.remove(name: name) }
    for (field, name) in HopByHop.Fields.all where present.contains(field) {
        if keepUpgrade && (field == .upgrade || field == .connection) { continue }
        headers.remove(name: name)
    }
}

extension HTTPHeaders {
    /// The request asks to switch protocols: an `Upgrade` field nominated by `Connection`.
    var asksForUpgrade: Bool {
        contains(name: "upgrade") && self[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
    }
}
