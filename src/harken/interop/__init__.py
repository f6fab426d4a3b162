"""DeepSpeech and Coqui STT files in: ``.tflite`` models (more formats follow)."""
