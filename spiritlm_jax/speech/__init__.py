"""Speech side: audio I/O, unit encoders (HuBERT, pitch, style, log-mel k-means) and the vocoder."""
