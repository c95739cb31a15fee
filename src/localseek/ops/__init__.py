"""Operations: metrics, sizing, deployment artifacts."""
