"""raydet: fault-tolerant object-detection training with mmdetection-2.x configs on Ray Train."""
__version__ = "0.1.0"
