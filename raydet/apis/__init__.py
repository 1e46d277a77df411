"""mmdet 2.x's training and testing API on raydet's engine. Imports no ray."""
from .inference import inference_detector, init_detector, show_result_pyplot
from .test import single_gpu_test
from .train import batch_processor, init_random_seed, parse_losses, set_random_seed, train_detector

__all__ = ["set_random_seed", "init_random_seed", "parse_losses", "batch_processor", "train_detector",
           "single_gpu_test", "init_detector", "inference_detector", "show_result_pyplot"]
