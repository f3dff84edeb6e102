import NIOHTTP1

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus any named in `Connection`.
let hopByHopHeaders: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"]

func stripHopByHop(_ headers: inout HTTPHeaders, keepUpgrade: Bool = false) {
    // One pass to see whether anything must go: most requests carry no hop-by-hop header but
    // `connection`, and removing by name costs a scan per name.
    var named: [String] = []
    var present = false
    for (name, value) in headers {
        let n = name.utf8.count
        guard n == 2 || n == 7 || n == 10 || n == 16 || n == 17 else { continue }
        let lower = name.lowercased()
        guard hopByHopHeaders.contains(lower) else { continue }
        present = true
        if lower == "connection" {
            for token in value.split(separator: ",") {
                let t = token.trimmingCharacters(in: .whitespaces).lowercased()
                if !t.isEmpty && !connectionNominationProtected.contains(t) && t != "close" && t != "keep-alive" { named.append(t) }
            }
        }
    }
    guard present else { return }
    for name in named { headers.remove(name: name) }
    for name in hopByHopHeaders {
        if keepUpgrade && (name == "upgrade" || name == "connection") { continue }
        headers.remove(name: name)
    }
}
