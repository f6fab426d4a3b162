"""DeepSpeech and Coqui STT files in: ``.tflite`` models, TensorFlow checkpoints, ``.scorer`` packages."""
