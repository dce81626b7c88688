"""Using a trained saliency model on photos: predictors, file helpers and saliency-guided cropping."""
