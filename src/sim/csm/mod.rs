//! Fake CSM services (BOS, BSS, CPS, CRUS, FAS, HSM, HMNFD) following `specs/`.
