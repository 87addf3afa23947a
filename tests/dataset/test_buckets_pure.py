"""kohya-compatible buckets, crop and flip, and the bucket report."""

import random

from PIL import Image

from lora_trainer.dataset.buckets import (BucketSettings, assign_bucket, bucket_report, bucket_resolutions,
                                          choose_bucket, fit_to_bucket, make_buckets)


def test_resolutions_match_kohya_for_512():
    resos = bucket_resolutions(BucketSettings((512, 512), 256, 1024, 64))
    # the values sd-scripts' make_bucket_resolutions gives for 512, 256..1024, step 64
    assert resos == sorted({(512, 512), (256, 1024), (1024, 256), (320, 768), (768, 320), (384, 640), (640, 384),
                            (448, 576), (576, 448), (512, 512), (704, 320), (320, 704), (832, 256), (256, 832),
                            (896, 256), (256, 896), (960, 256), (256, 960)})
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in resos)
    assert make_buckets(512) == resos


def test_choice_by_aspect_and_exact_size():
    settings = BucketSettings((512, 512))
    assert choose_bucket((1000, 600), settings).bucket == (640, 384)
    assert choose_bucket((600, 1000), settings).bucket == (384, 640)
    assert choose_bucket((2048, 2048), settings).bucket == (512, 512)
    choice = choose_bucket((1000, 700), settings)
    # resized to cover the bucket, aspect kept
    assert choice.resized[0] >= choice.bucket[0] and choice.resized[1] >= choice.bucket[1]
    assert abs(choice.resized[0] / choice.resized[1] - 1000 / 700) < 0.01


def test_no_upscale_never_enlarges():
    settings = BucketSettings((512, 512), no_upscale=True)
    assert choose_bucket((300, 200), settings).bucket == (256, 192)
    big = choose_bucket((4000, 3000), settings)
    assert big.bucket[0] * big.bucket[1] <= 512 * 512 and big.bucket[0] % 64 == 0
    assert assign_bucket((300, 200), make_buckets(512), 512, no_upscale=True) == (256, 192)
    assert choose_bucket((1, 1), settings).bucket == (64, 64)  # tiny images still get a usable bucket


def test_fit_crop_and_flip():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 20, 100))  # red strip on the left
    fitted, (top, left) = fit_to_bucket(image, (128, 64))
    assert fitted.size == (128, 64) and (top, left) == (0, 0)
    flipped, _ = fit_to_bucket(image, (128, 64), flip=True)
    assert fitted.getpixel((2, 30))[0] > 200 and flipped.getpixel((125, 30))[0] > 200
    square, (top, left) = fit_to_bucket(image, (64, 64))  # centre crop of a 128x64 resize
    assert square.size == (64, 64) and left == 32 and square.getpixel((2, 30))[0] < 50
    lefts = {fit_to_bucket(image, (64, 64), random_crop=True, rng=random.Random(seed))[1][1] for seed in range(20)}
    assert len(lefts) > 3


def test_bucket_report_counts_with_repeats():
    report = bucket_report([(512, 512), (640, 384), (512, 512)], [10, 1, 2])
    assert report == {"512x512": 12, "640x384": 1}
    assert bucket_report([(64, 64)]) == {"64x64": 1}
