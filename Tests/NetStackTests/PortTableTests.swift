import Testing
@testable import NetStack

/// The port table alone: Linux's bind() rules as ztap models them, then its users (TCP listen and
/// connect, UDP open) sharing one table.
@Suite struct PortTableTests {
    let a1 = IPAddress(IPv4Address(10, 0, 0, 1)), a2 = IPAddress(IPv4Address(10, 0, 0, 2))
    func ep(_ a: IPAddress, _ p: UInt16) -> IPEndpoint { IPEndpoint(a, p) }
    func ep(_ a: IPv4Address, _ p: UInt16) -> IPEndpoint { IPEndpoint(a, p) }
    let reuseAddr = PortTable.Options(reuseAddress: true)
    func reusePort(uid: UInt32) -> PortTable.Options { PortTable.Options(reusePort: true, uid: uid) }

    @Test func samePortConflictsWhenAddressesOverlap() throws {
        let t = PortTable(seed: 1)
        _ = try t.bind(.tcp, ep(a1, 80))
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(a1, 80)) }
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(.any, 80)) }   // wildcard overlaps
        _ = try t.bind(.tcp, ep(a2, 80))                                                 // other address: fine
        _ = try t.bind(.udp, ep(a1, 80))                                                 // other protocol: fine
        _ = try t.bind(.tcp, ep(a1, 81))
        let w = try t.bind(.udp, ep(.any, 53))
        #expect(throws: SocketError.addressInUse) { try t.bind(.udp, ep(a2, 53)) }      // under a wildcard
        #expect(w.local == ep(.any, 53))
        #expect(t.bindingCount == 5)
    }

    @Test func reuseAddressSharesUntilTheOtherListens() throws {
        let t = PortTable(seed: 1)
        let x = try t.bind(.tcp, ep(.any, 8080), options: reuseAddr)
        let y = try t.bind(.tcp, ep(a1, 8080), options: reuseAddr)       // both SO_REUSEADDR, not listening
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(a1, 8080)) }   // this one lacks it
        try t.listen(x)
        #expect(t.isListening(x) && !t.isListening(y))
        // The first listens: the second may not, nor may a new bind share with a listener.
        #expect(throws: SocketError.addressInUse) { try t.listen(y) }
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(a1, 8080), options: reuseAddr) }
        // Once it stops listening, sharing is allowed again.
        t.stopListening(x)
        try t.listen(y)
        #expect(t.isListening(y))
        try t.listen(y)   // listening twice is harmless
    }

    @Test func reusePortSharesOnlyWithinOneUser() throws {
        let t = PortTable(seed: 1)
        let x = try t.bind(.tcp, ep(.any, 9000), options: reusePort(uid: 1000))
        let y = try t.bind(.tcp, ep(.any, 9000), options: reusePort(uid: 1000))
        try t.listen(x)
        try t.listen(y)   // SO_REUSEPORT groups listen together
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(.any, 9000), options: reusePort(uid: 1001)) }
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(.any, 9000)) }
        // Both flags, but the other side set only SO_REUSEPORT: still per user.
        let both = PortTable.Options(reuseAddress: true, reusePort: true, uid: 1001)
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(a1, 9000), options: both) }
    }

    @Test func releaseGivesThePortBack() throws {
        let t = PortTable(seed: 1)
        let x = try t.bind(.tcp, ep(a1, 80))
        #expect(t.isBound(x) && t.isInUse(.tcp, port: 80))
        t.release(x)
        #expect(!t.isBound(x) && !t.isInUse(.tcp, port: 80))
        t.release(x)   // twice: nothing happens
        #expect(t.bindingCount == 0)
        let y = try t.bind(.tcp, ep(a1, 80))
        #expect(y != x)
        #expect(throws: SocketError.invalidHandle) { try t.listen(x) }
    }

    @Test func ephemeralBindTakesAFreePortInTheRange() throws {
        let t = PortTable(ephemeral: 50000...50003, seed: 7)
        _ = try t.bind(.tcp, ep(a2, 50001))   // held, even though on another address
        var got: Set<UInt16> = []
        for _ in 0..<3 {
            let b = try t.bind(.tcp, ep(a1, 0))
            #expect(t.ephemeral.contains(b.local.port))
            #expect(b.local.address == a1)
            got.insert(b.local.port)
        }
        #expect(got == [50000, 50002, 50003])
        // Exhausted: EADDRINUSE, as Linux's bind() says.
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(a1, 0)) }
        // UDP has its own ports.
        #expect(t.ephemeral.contains(try t.bind(.udp, ep(a1, 0)).local.port))
    }

    @Test func ephemeralStartIsRandomButReproducible() throws {
        let first = try PortTable(seed: 3).bind(.tcp, ep(a1, 0)).local.port
        #expect(try PortTable(seed: 3).bind(.tcp, ep(a1, 0)).local.port == first)
        var seen: Set<UInt16> = []
        for s in 1...8 { seen.insert(try PortTable(seed: UInt64(s)).bind(.tcp, ep(a1, 0)).local.port) }
        #expect(seen.count > 1)
        #expect(seen.allSatisfy { PortTable.defaultEphemeral.contains($0) })
    }

    @Test func connectNeedsOnlyAUniqueFourTuple() throws {
        let t = PortTable(ephemeral: 40000...40001, seed: 1)
        // Two connections may share a port (the caller says their 4-tuples differ).
        let p1 = try t.claimForConnect(address: a1) { _ in true }
        let p2 = try t.claimForConnect(address: a1) { $0 == p1 }
        #expect(p2 == p1)
        // A bind() of a port an outgoing connection holds conflicts; bind(0) avoids it.
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, ep(.any, p1)) }
        let other: UInt16 = p1 == 40000 ? 40001 : 40000
        #expect(try t.bind(.tcp, ep(a2, 0)).local.port == other)
        // Now `other` is bound on a2: a connect from a1 may still use it, one from a2 may not.
        #expect(try t.claimForConnect(address: a1) { $0 == other } == other)
        #expect(throws: SocketError.addressNotAvailable) { try t.claimForConnect(address: a2) { $0 == other } }
        // Nothing unique left: EADDRNOTAVAIL, as Linux's connect() says.
        #expect(throws: SocketError.addressNotAvailable) { try t.claimForConnect(address: a1) { _ in false } }
        // Claims are counted: the port frees when the last connection goes.
        t.releaseConnectClaim(port: p1, address: a1)
        #expect(t.isInUse(.tcp, port: p1))
        t.releaseConnectClaim(port: p1, address: a1)
        #expect(!t.isInUse(.tcp, port: p1))
        #expect(try t.bind(.tcp, ep(.any, p1)).local.port == p1)
    }
}

/// The stack's users of the table: TCP listeners and connects, UDP sockets and the services.
@Suite struct PortTableStackTests {
    @Test func listenersHoldTheirPortUntilClosed() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        #expect(throws: SocketError.addressInUse) { try h.layer.listen(local: h.local, backlog: 4, now: h.now) }
        #expect(throws: SocketError.addressInUse) {
            try h.layer.listen(local: IPEndpoint(.any, h.local.port), backlog: 4, now: h.now)
        }
        #expect(throws: SocketError.addressInUse) { try h.layer.ports.bind(.tcp, h.local) }
        h.layer.close(l, now: h.now)
        let again = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        h.layer.release(again, now: h.now)
        #expect(h.layer.ports.bindingCount == 0)
    }

    @Test func listenOnACallersBindingLeavesItBound() throws {
        let h = Harness()
        let ports = h.layer.ports
        let b = try ports.bind(.tcp, IPEndpoint(.any, 0), options: PortTable.Options(uid: 1000))
        let l = try h.layer.listen(binding: b, backlog: 4, now: h.now)
        #expect(ports.isListening(b))
        #expect(h.layer.localEndpoint(l) == b.local)
        // A SYN to that port reaches it.
        h.injectTo(IPEndpoint(h.local.address, b.local.port), seq: 1000, ack: 0, flags: .syn,
                   options: Harness.peerOptions())
        let out = h.sent()
        #expect(out.count == 1 && out.first?.flags == [.syn, .ack])
        h.layer.close(l, now: h.now)
        #expect(ports.isBound(b) && !ports.isListening(b))
        ports.release(b)
        #expect(throws: SocketError.invalidState) { try h.layer.listen(binding: b, backlog: 4, now: h.now) }
    }

    @Test func connectSkipsListeningPortsAndReleasesItsPort() throws {
        let h = Harness()
        let ports = h.layer.ports
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        let port = try #require(h.layer.localEndpoint(c)?.port)
        #expect(PortTable.defaultEphemeral.contains(port))
        #expect(ports.isInUse(.tcp, port: port))
        #expect(throws: SocketError.addressInUse) {
            try h.layer.listen(local: IPEndpoint(.any, port), backlog: 1, now: h.now)
        }
        h.layer.abort(c, now: h.now)
        #expect(!ports.isInUse(.tcp, port: port))
    }

    @Test func connectExhaustionIsAddressNotAvailable() throws {
        let h = Harness()
        // Bind every ephemeral port but one: connect must find that one, then run out.
        var bindings: [PortTable.Binding] = []
        for p in PortTable.defaultEphemeral where p != 60000 {
            bindings.append(try h.layer.ports.bind(.tcp, IPEndpoint(.any, p)))
        }
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        #expect(h.layer.localEndpoint(c)?.port == 60000)
        // Another remote port: a distinct 4-tuple, so the same local port serves.
        let other = IPEndpoint(h.remote.address, h.remote.port &+ 1)
        let c2 = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: other, now: h.now)
        #expect(h.layer.localEndpoint(c2)?.port == 60000)
        #expect(throws: SocketError.addressNotAvailable) {
            try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        }
        for b in bindings { h.layer.ports.release(b) }
    }

    @Test func udpSocketsAndServicesShareTheTable() throws {
        let (s, _) = makeStack(services: [.echo])
        // The echo service holds UDP and TCP port 7 on the wildcard address.
        #expect(throws: SocketError.addressInUse) { try s.udpOpen(local: IPEndpoint(.any, 7)) }
        #expect(throws: SocketError.addressInUse) { try s.ports.bind(.tcp, IPEndpoint(.any, 7)) }
        let u = try s.udpOpen(local: IPEndpoint(.any, 0))
        let port = try #require(s.udpLocalEndpoint(u)?.port)
        #expect(s.config.ephemeralPorts.contains(port))
        #expect(throws: SocketError.addressInUse) { try s.udpOpen(local: IPEndpoint(.any, port)) }
        // A shared UDP port, as two SO_REUSEADDR sockets may.
        let r = PortTable.Options(reuseAddress: true)
        let x = try s.udpOpen(local: IPEndpoint(.any, 5353), options: r)
        let y = try s.udpOpen(local: IPEndpoint(.any, 5353), options: r)
        s.udpClose(u)
        s.udpClose(x)
        s.udpClose(y)
        #expect(!s.ports.isInUse(.udp, port: port) && !s.ports.isInUse(.udp, port: 5353))
    }

    @Test func stackEphemeralRangeIsConfigurable() throws {
        let (s, _) = makeStack { $0.ephemeralPorts = 33000...33001 }
        let u1 = try s.udpOpen(local: IPEndpoint(.any, 0))
        let u2 = try s.udpOpen(local: IPEndpoint(.any, 0))
        #expect(Set([s.udpLocalEndpoint(u1)!.port, s.udpLocalEndpoint(u2)!.port]) == [33000, 33001])
        #expect(throws: SocketError.addressInUse) { try s.udpOpen(local: IPEndpoint(.any, 0)) }
        let c = try s.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        #expect((33000...33001).contains(s.tcp.localEndpoint(c)!.port))
    }
}
