//! `avg_pool2d`: the mean of each window.

crate::pool!(AvgPool2d, "avg_pool2d", AvgPool2d, AvgPool2dConfig);
