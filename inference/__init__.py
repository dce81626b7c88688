"""Inference on files: saliency maps and overlays for images and videos (video: `inference.video`)."""
