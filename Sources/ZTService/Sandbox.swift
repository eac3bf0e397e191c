import CSandbox
import Foundation
import LinuxNet

/// ztapd's own system-call allow-list (Sources/CSandbox/sandbox.c has the list and why a
/// violation traps rather than kills silently). Installed once, after setup; a reload cannot
/// lift it.
extension Daemon {
    func enterSandbox() throws(ServiceError) {
        guard daemonConfig.syscallFilter else {
            logger.warning("SyscallFilter=no: running without the system-call allow-list (debugging only)")
            return
        }
        let r = zt_sandbox_install()
        guard r == 0 else {
            throw ServiceError("cannot install the system-call filter: \(String(cString: strerror(-r))) "
                               + "(SyscallFilter=no in ztapd.conf runs without it)", errno: -r)
        }
        logger.info("system-call filter installed")
    }
}

extension Daemon {
    /// Started as a user other than root holding CAP_NET_ADMIN at most (the systemd unit's
    /// User=ztapd with AmbientCapabilities=CAP_NET_ADMIN, or `setpriv --ambient-caps`): there is
    /// nothing to drop, and the unit's own SystemCallFilter= refuses capset. The ambient set
    /// stays, harmlessly: it only matters across execve, which ztapd never makes (and its
    /// filter forbids).
    func alreadyMinimal() -> Bool {
        let caps = Capabilities.current()
        let permitted = caps["CapPrm", default: 0], bounding = caps["CapBnd", default: 0]
        guard geteuid() != 0, daemonConfig.user?.isEmpty ?? true,
              permitted & ~Capabilities.netAdminMask == 0, bounding & ~Capabilities.netAdminMask == 0 else { return false }
        logger.info("started with CAP_NET_ADMIN only: nothing to drop")
        return true
    }
}
