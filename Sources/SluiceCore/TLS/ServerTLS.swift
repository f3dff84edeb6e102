import Foundation
import NIOCore
import NIOSSL
import ProxyWasm
import SluiceConfig
import X509

/// Why a listener's TLS configuration cannot be used; names the config field and the file.
struct TLSSetupError: Error, CustomStringConvertible {
    let description: String
}

/// What a certificate's properties show (`connection.subject_local_certificate` and the SANs).
struct CertificateFacts: Sendable {
    let subject: String
    let uriSANs: [String]
    let dnsSANs: [String]

    init(subject: String, uriSANs: [String], dnsSANs: [String]) {
        self.subject = subject
        self.uriSANs = uriSANs
        self.dnsSANs = dnsSANs
    }

    init(der: [UInt8]) throws {
        let certificate = try Certificate(derEncoded: der)
        subject = certificate.subject.description
        var uris: [String] = []
        var names: [String] = []
        if let sans = try certificate.extensions.subjectAlternativeNames {
            for name in sans {
                switch name {
                case .uniformResourceIdentifier(let uri): uris.append(uri)
                case .dnsName(let dns): names.append(dns)
                default: break
                }
            }
        }
        uriSANs = uris
        dnsSANs = names
    }
}

/// A listener's TLS: one BoringSSL context per group of server names, each built once per
/// configuration generation (a reload builds new ones; a bad certificate fails the reload and
/// the old contexts keep serving). The client's SNI picks the context before the handshake.
final class ServerTLS: Sendable {
    struct Choice: Sendable {
        let context: NIOSSLContext
        let local: CertificateFacts
    }

    private let exact: [String: Choice]
    /// `*.example.com` stored as `.example.com`, longest first: the most specific wins.
    private let wildcards: [(suffix: String, choice: Choice)]
    /// For no SNI or an unknown name; nil: such handshakes are refused (an Envoy listener
    /// whose every filter chain names servers).
    private let fallback: Choice?
    /// False for an Envoy listener without the TLS inspector: the SNI is neither matched nor
    /// reported, as there.
    let inspectsServerName: Bool

    init(config: ListenerTLSConfig, listener: String) throws(TLSSetupError) {
        var exact: [String: Choice] = [:]
        var wildcards: [(String, Choice)] = []
        var fallback: Choice?
        let clientCA: [NIOSSLCertificate]?
        do {
            clientCA = try config.clientCA.map { try NIOSSLCertificate.fromPEMFile($0) }
        } catch {
            throw TLSSetupError(description: "listener '\(listener)': client_ca \(config.clientCA ?? ""): not a PEM certificate bundle (\(error))")
        }
        if let clientCA, clientCA.isEmpty {
            throw TLSSetupError(description: "listener '\(listener)': client_ca \(config.clientCA ?? ""): no certificate in the file")
        }
        for group in config.serverNames {
            guard let first = group.certificates.first else { continue }
            let choice = try Self.makeChoice(first, config: config, clientCA: clientCA, listener: listener)
            if group.serverNames.isEmpty {
                if fallback == nil { fallback = choice }
            }
            for name in group.serverNames {
                if name.hasPrefix("*.") {
                    wildcards.append((String(name.dropFirst()), choice))
                } else if exact[name] == nil {
                    exact[name] = choice
                }
            }
        }
        self.exact = exact
        self.wildcards = wildcards.sorted { $0.0.count > $1.0.count }
        // Natively, the first certificate serves names nobody claimed (as nginx's default
        // server); an Envoy listener without a chain for them refuses them.
        if fallback == nil && !config.refuseUnknownServerNames, let first = config.serverNames.first?.certificates.first {
            fallback = try Self.makeChoice(first, config: config, clientCA: clientCA, listener: listener)
        }
        self.fallback = fallback
        self.inspectsServerName = config.inspectsServerName
    }

    /// The TLS of every listener that terminates it; the first bad certificate or key fails all.
    static func build(_ config: SluiceConfiguration) throws(TLSSetupError) -> [String: ServerTLS] {
        var all: [String: ServerTLS] = [:]
        for listener in config.listeners {
            guard var tls = listener.tls else { continue }
            // A listener that speaks only HTTP/1.1 does not offer h2.
            if listener.codec == .http1 { tls.alpn.removeAll { $0 == "h2" } }
            all[listener.name] = try ServerTLS(config: tls, listener: listener.name)
        }
        return all
    }

    /// The context for a client's SNI (nil: the client sent none).
    func choose(serverName: String?) -> Choice? {
        guard let serverName else { return fallback }
        if let choice = exact[serverName] { return choice }
        for (suffix, choice) in wildcards where serverName.hasSuffix(suffix) && serverName.count > suffix.count {
            // `*.example.com` covers one or more labels before the suffix, as Envoy's matcher.
            return choice
        }
        return fallback
    }

    private static func makeChoice(_ certificate: TLSCertificateConfig, config: ListenerTLSConfig, clientCA: [NIOSSLCertificate]?,
                                   listener: String) throws(TLSSetupError) -> Choice {
        let field = certificate.configPath.isEmpty ? "listener '\(listener)'" : certificate.configPath
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate.certificateChain)
        } catch {
            throw TLSSetupError(description: "\(field).certificate_chain \(certificate.certificateChain): not a PEM certificate chain (\(error))")
        }
        guard let leaf = chain.first else {
            throw TLSSetupError(description: "\(field).certificate_chain \(certificate.certificateChain): no certificate in the file")
        }
        do {
            key = try NIOSSLPrivateKey(file: certificate.privateKey, format: .pem)
        } catch {
            throw TLSSetupError(description: "\(field).private_key \(certificate.privateKey): not a PEM private key (\(error))")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        // A client that never answers close_notify holds a closed connection this long at most.
        tls.shutdownTimeout = .seconds(1)
        tls.minimumTLSVersion = config.minimumVersion.nio
        tls.maximumTLSVersion = config.maximumVersion.nio
        tls.applicationProtocols = config.alpn
        if !config.cipherSuites.isEmpty { tls.cipherSuites = config.cipherSuites.joined(separator: ":") }
        if let clientCA {
            tls.trustRoots = .certificates(clientCA)
            tls.certificateVerification = config.requireClientCertificate ? .noHostnameVerification : .optionalVerification
        }
        do {
            let context = try NIOSSLContext(configuration: tls)
            let facts = try CertificateFacts(der: leaf.toDERBytes())
            return Choice(context: context, local: facts)
        } catch {
            throw TLSSetupError(description: "\(field): the certificate, its private key and the TLS settings do not fit together (\(error))")
        }
    }
}

extension TLSProtocolVersion {
    var nio: TLSVersion {
        switch self {
        case .tls1_0: return .tlsv1
        case .tls1_1: return .tlsv11
        case .tls1_2: return .tlsv12
        case .tls1_3: return .tlsv13
        }
    }
}

extension TLSVersion {
    /// As BoringSSL's SSL_get_version names it, which is what Envoy reports.
    var envoyName: String {
        switch self {
        case .tlsv1: return "TLSv1"
        case .tlsv11: return "TLSv1.1"
        case .tlsv12: return "TLSv1.2"
        case .tlsv13: return "TLSv1.3"
        }
    }
}

extension TLSDetails {
    /// Read off a finished handshake: the negotiated version, the SNI the client asked for,
    /// the certificate Sluice presented and the client's, if it sent one.
    init(handler: NIOSSLHandler, serverName: String?, local: CertificateFacts) {
        self.init(version: handler.tlsVersion?.envoyName ?? "", requestedServerName: serverName ?? "",
                  localSubject: local.subject, localURISANs: local.uriSANs, localDNSSANs: local.dnsSANs)
        if let peer = handler.peerCertificate, let der = try? peer.toDERBytes() {
            peerCertificatePresented = true
            peerSHA256Digest = SHA256.hex(der)
            if let facts = try? CertificateFacts(der: der) {
                peerSubject = facts.subject
                peerURISANs = facts.uriSANs
                peerDNSSANs = facts.dnsSANs
            }
        }
    }
}
