import CShims

extension Daemon {
    /// Socket rings (TCP receive/send buffers, MiBs each) are the daemon's big allocations, made
    /// and freed per connection. glibc raises its mmap threshold to the size of the largest
    /// mmapped block freed, so after the first connection closes, rings come from the arenas and
    /// their pages stay with the process after free (measured: ~57 MiB kept for good after
    /// connection churn). A fixed threshold keeps rings mmapped: their memory goes back to the
    /// kernel when a connection ends, and RSS follows the live connections.
    static func pinMmapThreshold() {
        _ = cshim_pin_mmap_threshold(256 << 10)
    }
}
