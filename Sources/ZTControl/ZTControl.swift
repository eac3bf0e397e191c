// \(m) — placeholder, filled in by its issue work.
