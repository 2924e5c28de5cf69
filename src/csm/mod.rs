//! Typed clients for the CSM REST APIs (BOS, CRUS, HSM, FAS, HMNFD, BSS, CPS).
