//! `idlegrid-supervisor bench chaos` (being written).
