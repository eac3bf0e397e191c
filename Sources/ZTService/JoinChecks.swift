import ZTControl

extension Daemon {
    /// `join`'s options become lines of networks.d/NAME.conf. A value with a control character
    /// (a line break above all) would forge lines of its own, and INIDocument.set refuses one by
    /// a precondition: found by the control fuzz target as a crash of ztapd. `set` has the same
    /// rule (NetworkConfigEditor). nil: fine; else the error to answer with EINVAL.
    static func invalidJoinOption(_ o: JoinOptions) -> String? {
        let values: [(String, String)] = o.addresses.map { ("Address", $0) } + o.kernelAddresses.map { ("KernelAddress", $0) }
            + [("MACAddress", o.mac), ("Interface", o.interface), ("Bridge", o.bridge)].compactMap { k, v in v.map { (k, $0) } }
        for (key, v) in values where v.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "invalid \(key)=: the value contains control characters or line breaks"
        }
        return nil
    }
}
